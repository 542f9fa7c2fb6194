-- attack: a looping __gc finalizer
app.interface{
  fn = function(x)
    setmetatable({}, {__gc = function() while true do end end}) return 'set'
  end,
  inputs = 'text',
  outputs = 'text',
}
