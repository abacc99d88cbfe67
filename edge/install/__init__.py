"""Model installation: the slot store that verifies, activates, trials and rolls back models
(store) and the link that receives them (receiver)."""
