"""How tasks execute: one contract (base.Engine), one module per engine."""
