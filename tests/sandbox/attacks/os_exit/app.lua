-- attack: os.exit
app.interface{
  fn = function(x)
    return os.exit(1)
  end,
  inputs = 'text',
  outputs = 'text',
}
