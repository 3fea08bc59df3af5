// app.js - the demo activity feed (placeholder until the client lands)
