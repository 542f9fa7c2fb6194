-- attack: rawset on a library table
app.interface{
  fn = function(x)
    rawset(table, 'insert', nil)
  end,
  inputs = 'text',
  outputs = 'text',
}
