-- attack: doubling concatenation
app.interface{
  fn = function(x)
    local s = 'x' while true do s = s .. s end
  end,
  inputs = 'text',
  outputs = 'text',
}
