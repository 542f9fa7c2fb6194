-- attack: loadfile
app.interface{
  fn = function(x)
    return loadfile('/etc/passwd')
  end,
  inputs = 'text',
  outputs = 'text',
}
