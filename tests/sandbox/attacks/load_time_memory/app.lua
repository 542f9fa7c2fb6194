-- attack: a memory bomb at load time
local s = ('x'):rep(1e9)
app.interface{ fn = function() return s end, inputs = 'text', outputs = 'text' }
