-- attack: a crafted binary chunk
app.interface{
  fn = function(x)
    return assert(load('\27Lua\84\0\25\147\13\10\26\10\4\8\8'))
  end,
  inputs = 'text',
  outputs = 'text',
}
