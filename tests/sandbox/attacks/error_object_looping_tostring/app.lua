-- attack: an error object whose __tostring loops
app.interface{
  fn = function(x)
    error(setmetatable({}, {__tostring = function() while true do end end}))
  end,
  inputs = 'text',
  outputs = 'text',
}
