-- attack: debug.*
app.interface{
  fn = function(x)
    return debug.getregistry()
  end,
  inputs = 'text',
  outputs = 'text',
}
