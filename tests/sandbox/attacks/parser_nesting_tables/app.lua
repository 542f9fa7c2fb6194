-- attack: deeply nested table constructors
app.interface{
  fn = function(x)
    return assert(load('return ' .. ('{'):rep(1e5)))
  end,
  inputs = 'text',
  outputs = 'text',
}
