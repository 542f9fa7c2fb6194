-- attack: string.rep memory bomb
app.interface{
  fn = function(x)
    return ('x'):rep(1e9)
  end,
  inputs = 'text',
  outputs = 'text',
}
