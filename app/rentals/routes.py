from flask_smorest import Blueprint

blp = Blueprint("rentals", __name__, url_prefix="/api/v1", description="Rentals")
