-- attack: a looping xpcall error handler
app.interface{
  fn = function(x)
    while true do xpcall(function() error('x') end, function() while true do end end) end
  end,
  inputs = 'text',
  outputs = 'text',
}
