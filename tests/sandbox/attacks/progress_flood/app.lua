-- attack: a progress flood
app.interface{
  fn = function(x)
    while true do progress(0.5, nil, 'x') end
  end,
  inputs = 'text',
  outputs = 'text',
}
