-- attack: replacing a built-in global
app.interface{
  fn = function(x)
    print = nil tostring = error return 'x'
  end,
  inputs = 'text',
  outputs = 'text',
}
