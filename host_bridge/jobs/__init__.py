"""AWS IoT Jobs: the job documents the bridge understands, and the Jobs client."""
