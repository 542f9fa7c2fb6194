-- attack: a loop inside coroutine.wrap
app.interface{
  fn = function(x)
    coroutine.wrap(function() while true do end end)()
  end,
  inputs = 'text',
  outputs = 'text',
}
