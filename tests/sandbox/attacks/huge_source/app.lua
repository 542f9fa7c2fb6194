-- attack: a huge source
app.interface{
  fn = function(x)
    return assert(load(('x = 1 '):rep(2e7)))
  end,
  inputs = 'text',
  outputs = 'text',
}
