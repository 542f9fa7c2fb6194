-- attack: a huge output
app.interface{
  fn = function(x)
    return ('x'):rep(3e7)
  end,
  inputs = 'text',
  outputs = 'text',
}
