-- attack: tampering with the string metatable
app.interface{
  fn = function(x)
    getmetatable('').__index.upper = nil
  end,
  inputs = 'text',
  outputs = 'text',
}
