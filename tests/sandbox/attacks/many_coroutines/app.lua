-- attack: many coroutines
app.interface{
  fn = function(x)
    local t = {} for i = 1, 1e8 do t[i] = coroutine.create(function() end) end
  end,
  inputs = 'text',
  outputs = 'text',
}
