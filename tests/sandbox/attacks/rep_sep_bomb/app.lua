-- attack: string.rep with a separator
app.interface{
  fn = function(x)
    return ('x'):rep(1e8, ('y'):rep(100))
  end,
  inputs = 'text',
  outputs = 'text',
}
