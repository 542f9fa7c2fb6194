-- attack: a looping __close handler
app.interface{
  fn = function(x)
    local x <close> = setmetatable({}, {__close = function() while true do end end}) error('x')
  end,
  inputs = 'text',
  outputs = 'text',
}
