"""The model catalog: Foundry-shaped entries shipped with Ladle plus the user's own."""
