"""City packs (real geometry), the unit grid, jurisdiction lookup, nearest/fastest crew on the road graph."""
