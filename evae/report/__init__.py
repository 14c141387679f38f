"""Tables and figures compiled from the pipeline's results."""
