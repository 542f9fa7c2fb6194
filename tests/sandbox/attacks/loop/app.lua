-- attack: an endless loop
app.interface{
  fn = function(x)
    while true do end
  end,
  inputs = 'text',
  outputs = 'text',
}
