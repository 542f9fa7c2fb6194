-- attack: recursion through __index
app.interface{
  fn = function(x)
    local t t = setmetatable({}, {__index = function(_, k) return t[k] end}) return t.x
  end,
  inputs = 'text',
  outputs = 'text',
}
