"""Images for the device: recognise, verify, sign."""
