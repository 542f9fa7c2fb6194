-- attack: a yield flood
app.interface{
  fn = function(x)
    while true do coroutine.yield(('x'):rep(1e4)) end
  end,
  inputs = 'text',
  outputs = 'text',
}
