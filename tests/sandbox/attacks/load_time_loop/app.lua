-- attack: an endless loop at load time
while true do end
app.interface{ fn = function() return 'x' end, inputs = 'text', outputs = 'text' }
