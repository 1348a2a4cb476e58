"""The six FOCUS steps as pure functions over tensors, arrays and configs."""
