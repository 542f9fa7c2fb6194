-- attack: collectgarbage options
app.interface{
  fn = function(x)
    collectgarbage('stop') collectgarbage('generational') return 'done'
  end,
  inputs = 'text',
  outputs = 'text',
}
