"""Build InstaHide challenge releases: draw the secret keys, encode, write the release."""
