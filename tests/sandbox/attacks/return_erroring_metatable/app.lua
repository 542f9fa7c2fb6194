-- attack: a returned value with an erroring metatable
app.interface{
  fn = function(x)
    return setmetatable({}, {__index = function() error('boom') end, __tostring = function() error('boom') end, __len = function() error('boom') end})
  end,
  inputs = 'text',
  outputs = 'text',
}
