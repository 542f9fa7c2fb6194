-- attack: deep Lua recursion
app.interface{
  fn = function(x)
    local function f(n) return 1 + f(n + 1) end return f(1)
  end,
  inputs = 'text',
  outputs = 'text',
}
