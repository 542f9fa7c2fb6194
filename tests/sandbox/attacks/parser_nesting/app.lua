-- attack: parser nesting
app.interface{
  fn = function(x)
    return assert(load(('('):rep(1e5)))
  end,
  inputs = 'text',
  outputs = 'text',
}
