-- attack: a cyclic table returned
app.interface{
  fn = function(x)
    local t = {} t[1] = t return t
  end,
  inputs = 'text',
  outputs = 'json',
}
