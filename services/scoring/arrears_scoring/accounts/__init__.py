"""Reading account states and the model over HTTP."""
