-- attack: io.popen
app.interface{
  fn = function(x)
    return io.popen('id'):read('a')
  end,
  inputs = 'text',
  outputs = 'text',
}
