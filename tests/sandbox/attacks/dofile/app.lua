-- attack: dofile
app.interface{
  fn = function(x)
    return dofile('/etc/passwd')
  end,
  inputs = 'text',
  outputs = 'text',
}
