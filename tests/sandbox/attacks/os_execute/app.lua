-- attack: os.execute
app.interface{
  fn = function(x)
    return os.execute('id')
  end,
  inputs = 'text',
  outputs = 'text',
}
