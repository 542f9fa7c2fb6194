-- attack: a returned value with a looping metatable
app.interface{
  fn = function(x)
    return setmetatable({}, {__tostring = function() while true do end end, __pairs = function() while true do end end})
  end,
  inputs = 'text',
  outputs = 'text',
}
