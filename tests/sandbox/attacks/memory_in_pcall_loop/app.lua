-- attack: memory errors swallowed by pcall in a loop
app.interface{
  fn = function(x)
    while true do pcall(string.rep, 'x', 1e9) end
  end,
  inputs = 'text',
  outputs = 'text',
}
