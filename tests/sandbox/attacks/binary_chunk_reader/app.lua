-- attack: a binary chunk through a reader function
app.interface{
  fn = function(x)
    local d = false return assert(load(function() if d then return nil end d = true return '\27Lua' end))
  end,
  inputs = 'text',
  outputs = 'text',
}
