-- attack: a model the card does not declare
app.interface{
  fn = function(x)
    return model('openai/gpt-4'):generate('hi')()
  end,
  inputs = 'text',
  outputs = 'text',
}
