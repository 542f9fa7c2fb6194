-- attack: package.loadlib
app.interface{
  fn = function(x)
    return package.loadlib('libc.so.6', 'system')
  end,
  inputs = 'text',
  outputs = 'text',
}
