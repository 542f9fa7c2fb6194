-- attack: a huge table
app.interface{
  fn = function(x)
    local t = {} for i = 1, 1e9 do t[i] = i end
  end,
  inputs = 'text',
  outputs = 'text',
}
