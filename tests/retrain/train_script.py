"""A stand-in for the design's "existing train.py": `python train_script.py DATA OUTPUT TARGET`."""

import sys

import joblib
import pandas as pd
from sklearn.linear_model import LinearRegression

if __name__ == "__main__":
    data, output, target = sys.argv[1:4]
    frame = pd.read_parquet(data)
    joblib.dump(LinearRegression().fit(frame.drop(columns=[target]), frame[target]), output)
