-- attack: table.concat of many strings
app.interface{
  fn = function(x)
    local t = {} for i = 1, 1e7 do t[i] = ('x'):rep(100) .. i end return table.concat(t)
  end,
  inputs = 'text',
  outputs = 'text',
}
