-- attack: loops resuming looping coroutines under pcall
app.interface{
  fn = function(x)
    while true do pcall(coroutine.resume, coroutine.create(function() while true do end end)) end
  end,
  inputs = 'text',
  outputs = 'text',
}
