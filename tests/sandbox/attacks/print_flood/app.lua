-- attack: a print flood
app.interface{
  fn = function(x)
    while true do print(('x'):rep(1e4)) end
  end,
  inputs = 'text',
  outputs = 'text',
}
