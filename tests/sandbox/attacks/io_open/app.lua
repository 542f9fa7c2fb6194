-- attack: io.open
app.interface{
  fn = function(x)
    return io.open('/etc/passwd'):read('a')
  end,
  inputs = 'text',
  outputs = 'text',
}
