-- attack: endless loops inside pcall loops
app.interface{
  fn = function(x)
    while true do pcall(function() while true do end end) end
  end,
  inputs = 'text',
  outputs = 'text',
}
