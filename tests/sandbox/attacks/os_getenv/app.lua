-- attack: os.getenv
app.interface{
  fn = function(x)
    return os.getenv('HOME')
  end,
  inputs = 'text',
  outputs = 'text',
}
